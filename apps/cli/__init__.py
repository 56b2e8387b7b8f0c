"""The `triptych` command and the scripts it dispatches to."""
