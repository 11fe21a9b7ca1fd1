"""The language-model half of the course (notebooks 01-05, 10): loading models, a decoder layer by hand,
sampling, the KV cache, parallel decoding, benchmarks, training memory, babyGPT, and grammar-constrained
decoding (by hand, and with llguidance)."""
