"""The LaMP data contract: tasks, records, official file I/O, synthetic data, splits, metrics."""
