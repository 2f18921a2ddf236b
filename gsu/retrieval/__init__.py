"""gsu.retrieval"""
