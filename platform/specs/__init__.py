"""Specs: YAML to frozen, validated settings (the loader, one base for run and study specs, the search axes), and
the places a spec or a command writes, checked before anything starts."""
