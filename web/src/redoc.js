// ReDoc at /redoc: the pinned redoc package's standalone bundle (copied into the assets by
// build.mjs, loaded before this script, served by the binary: no CDN) rendering /openapi.json.
window.Redoc.init('/openapi.json', { hideDownloadButton: false }, document.getElementById('redoc'));
