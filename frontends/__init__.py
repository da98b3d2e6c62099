"""Ways to declare cells: nngraph (Torch-style modules), equations (text), trace (operators)."""
