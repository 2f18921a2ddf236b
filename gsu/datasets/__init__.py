"""gsu.datasets"""
