"""The `triptych` command and the scripts it dispatches to. Each script imports torch and the models only after
its arguments are checked (imports inside `main`), so `--help` and usage errors answer at once."""
