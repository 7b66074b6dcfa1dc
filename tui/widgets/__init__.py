"""The dashboard's widgets: one view per file, each rendering some sections of the model."""
