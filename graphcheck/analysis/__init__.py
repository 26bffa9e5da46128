"""Read-only analysis passes over the model graph that rules share (paths, gradient flow, signal, weights, cuts, structure, probe)."""
