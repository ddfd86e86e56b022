// Swagger UI at /docs, from the pinned swagger-ui-dist package (bundled here, served by the
// binary: no CDN). It reads /openapi.json; "Try it out" calls the API on the same origin.
import 'swagger-ui-dist/swagger-ui.css';
import SwaggerUIBundle from 'swagger-ui-dist/swagger-ui-bundle.js';

window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  // The online validator badge would call validator.swagger.io: off.
  validatorUrl: null,
  displayRequestDuration: true,
});
