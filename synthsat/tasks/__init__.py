"""Lightning tasks (``GeneratorTask``, ``SegmentationTask``); import them from their modules."""
