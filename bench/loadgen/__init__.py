"""Scenario 9: the control plane at scale, driven by simulated workers (see control_plane.py)."""
