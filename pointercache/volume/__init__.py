"""The on-disk contract: layout names, durable file primitives, the atomic store on the
shared volume, and the node directory (LKG pointers and the content-addressed cache).
"""
