"""One blueprint per trigger; each handler decodes its binding, calls shared/, and reports."""
