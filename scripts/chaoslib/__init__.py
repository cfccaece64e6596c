"""The chaos harness's parts (scripts/chaos.py runs them): a stdlib MQTT client that
timestamps every message as it arrives, the rig (mosquitto, the daemon, its state folder),
one module per part, and the RELIABILITY.md generator."""
