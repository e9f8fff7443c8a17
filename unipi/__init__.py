"""UniPi: a universal policy via text-guided video generation.

The package holds the video planner (text encoder, space-time U-Nets, pipeline), the
dataset format, the closed-loop agent, evaluation and the ``unipi`` command line.
"""

__version__ = "0.1.0"
