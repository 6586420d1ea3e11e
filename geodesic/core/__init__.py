"""The math: flat parameters and their groups, the functional metric g = JᵀJ, the exact tangent, the
self-checking step, objectives and targets, the path that walks them; training and evaluation of a net."""
