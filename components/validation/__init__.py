"""Great Expectations suites for LaMP files (imported lazily: GX takes seconds to import)."""
