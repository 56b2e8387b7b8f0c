"""`triptych-benchmark`: speed, memory and load tables against the peers a user would use."""
