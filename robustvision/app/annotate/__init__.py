"""The browser annotation tool: click-based interactive segmentation served by FastAPI.

``controller`` holds every rule (images, sessions, undo/redo, objects, autosave) and is testable without a browser;
``server`` puts HTTP routes on top of it; ``static/`` is the page (plain HTML/CSS/JS, no build step).
"""

from robustvision.app.annotate.controller import AnnotationProject, ClickSession
from robustvision.app.annotate.labels import Label, read_labels, write_labels

__all__ = ["AnnotationProject", "ClickSession", "Label", "read_labels", "write_labels"]
