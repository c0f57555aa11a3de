"""The fault suite of issue 10 (section 5): `python -m tests.faults`, `make faults`."""
