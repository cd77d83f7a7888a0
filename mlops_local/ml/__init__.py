"""Machine learning: datasets, model catalog, preprocessing, training, evaluation, promotion."""
