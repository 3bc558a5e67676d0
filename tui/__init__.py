"""``heur tui``: the Textual face of heur. Reads run directories, launches and stops runs
through ``heur.core.runs``; never trains anything itself.

Modules: ``app`` (the App, its reader thread and redraw timer), ``sidebar`` (presets and
experiment tree), ``screens`` (help, launch, confirm, info), ``feed`` (tailing and status
polling, no Textual), ``model`` (events -> numpy columns), ``figures`` (panels as plain data),
``downsample`` (min/max buckets, smoothing), ``plotting`` (the only module that calls the
plotting library), ``heatmap`` (CCA cells), ``presets``, ``source`` (the door to the engine).
"""
