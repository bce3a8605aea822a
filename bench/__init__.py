"""The lanchat benchmark: ``python -m bench [--quick|--smoke]`` (see README.md)."""
