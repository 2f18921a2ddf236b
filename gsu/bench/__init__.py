"""gsu.bench"""
