"""The image viewer: OHIF Viewer 3's static build served at /viewer/ (docs/viewer.md)."""
