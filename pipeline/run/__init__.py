"""What a run is.

Its typed config, songs and grids, prompts and labels, and the checks of all of them before
anything starts.
"""
