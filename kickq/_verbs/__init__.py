"""The API behind `kickq/__init__`: each verb validates its arguments, then hands on to the engine.

None of them blocks its caller on Redis; they return futures or answer from a background call.
"""
