"""augment: see DESIGN.md."""
