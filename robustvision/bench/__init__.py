"""The benchmark: plan model x technique x noise x severity cells, run them (local or Ray), store every number,
derive RobustART's metrics and write the report.

Modules: :mod:`~robustvision.bench.plan` (config, presets, budgets, cells), :mod:`~robustvision.bench.runner`
(executors), :mod:`~robustvision.bench.store` (SQLAlchemy results store), :mod:`~robustvision.bench.metrics`
(formulas), :mod:`~robustvision.bench.summary` (metrics from the store), :mod:`~robustvision.bench.report` (HTML).
"""
