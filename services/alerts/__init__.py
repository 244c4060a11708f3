"""Alerts: what changed in a run, told once per decision to the channels traders use (Apprise on one machine, an SNS
topic and the alerts function in the cloud)."""
