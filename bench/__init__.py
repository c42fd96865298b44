"""kexp's benchmark (``make bench``): kexp against plain Keras on the chapter's networks.

``bench/run.py`` is the entry point; each measured variant runs in its own process
(``bench/worker.py``), so peak memory is per variant and nothing one variant traced or
allocated helps or hurts the next.
"""
