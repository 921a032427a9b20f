"""A simulated rig: camera, tracking and stimulus processes publishing to collectord.

Each module is a process a lab would write: run one with
``python -m collectord.clients.camera --help`` (installed) or
``python clients/camera.py --help`` (from a checkout). ``collectord demo``
starts all three with a daemon.
"""
