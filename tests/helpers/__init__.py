"""Helpers shared by tests (imported, never fixtures): paths, the synthetic corpus, config
composition and in-memory coders. Test modules never import each other."""
