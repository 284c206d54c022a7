"""What a run is: its typed config, songs and grids, prompts and labels, and the checks of all of them before anything starts."""
