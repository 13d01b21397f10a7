"""rlvr: reinforcement learning from verifiable rewards, and test-time compute."""
__version__ = "0.1.0"
