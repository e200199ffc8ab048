"""tools/bench.py's parts: plan (what runs), run (measuring one), cache (the results on disk), tables and render (the docs)."""
