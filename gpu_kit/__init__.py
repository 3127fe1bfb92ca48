"""The GPU measurement kit: scripts that measure the notebooks on a lent GPU machine without a
model hub or network (see README.md beside this file). Not part of the ``aidetect_utils``
package, which never imports it; it imports the package."""
