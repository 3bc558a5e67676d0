"""What each panel shows, as plain data: shared by the TUI (plotext) and the reports (matplotlib).

- :mod:`.figure`: the figure data classes (:class:`~.figure.Figure` of :class:`~.figure.Series`
  with :class:`~.figure.HLine` thresholds, :class:`~.figure.Heatmap`, :class:`~.figure.Bars`)
  and the palette.
- :mod:`.rundata`: a run's events as numpy columns (:class:`~.rundata.RunData`, :func:`~.rundata.decode`).
- :mod:`.downsample`: min/max decimation and the debiased EMA.
- :mod:`.panels`: the panel builders, pure functions of (runs, view, width).

No module here imports a UI or plotting library (textual, rich, plotext, matplotlib).
"""
