"""``kato-gpu bench``: speed and exactness of kato_gpu against RapidFuzz and difflib.

``workload`` generates seeded data in KATO's benchmark shape (or 5-token chunks);
``runner`` loads it into a matcher, times the same queries through kato_gpu, RapidFuzz's
``process.cdist`` and a difflib loop, and checks kato_gpu's results against the exact references.
"""

from .workload import SHAPES, Workload, generate_workload, pattern_index, pattern_name, pattern_names

__all__ = ["SHAPES", "Workload", "generate_workload", "pattern_index", "pattern_name", "pattern_names"]
