"""Applications built on the package (the browser annotation tool)."""
