"""Signing, keys and secret files.

One place that commands, the uplink and the receiver all import.
"""
