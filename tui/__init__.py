"""The Textual operator console: a pure gRPC client of ModelAdmin and Recommender."""
