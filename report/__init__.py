"""Reports: the panels of ``heur.figures`` drawn with matplotlib (``render``) into figure files
and one self-contained HTML page per experiment (``page``)."""
