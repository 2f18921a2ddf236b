"""gsu.ctr"""
