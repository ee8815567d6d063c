"""Place search over a map's global descriptors: the faiss index and its PCA."""
