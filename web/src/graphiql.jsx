// GraphiQL for house-price-api: POST /graphql on this origin, subscriptions via graphql-ws at /ws.
import React from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { createClient } from 'graphql-ws';
import { parse } from 'graphql';
import 'graphiql/style.css';
import './graphiql.css';

// The endpoints come from the page (the server's routes), resolved against this origin.
const root = document.getElementById('graphiql');
const httpUrl = new URL(root.dataset.endpoint || '/graphql', window.location.href).toString();
const wsUrl = new URL(root.dataset.subscriptionEndpoint || '/ws', window.location.href);
wsUrl.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';

// The API key (ACCESS=keys) is the `x-api-key` of the headers editor; it is kept in
// sessionStorage only (headers are not persisted), so it leaves with the tab. Subscriptions send
// it in the connection_init payload, since browsers cannot set WebSocket headers.
const KEY_STORAGE = 'house-price-api:api-key';
let socketKey = sessionStorage.getItem(KEY_STORAGE) || '';
const wsClient = createClient({
  url: wsUrl.toString(),
  lazy: true,
  retryAttempts: 3,
  connectionParams: () => (socketKey ? { 'x-api-key': socketKey } : {}),
});
const baseFetcher = createGraphiQLFetcher({ url: httpUrl, wsClient });

// GraphiQL keeps its tabs and history in localStorage, and the history saves each query's
// headers: the key is scrubbed from every value on the way in, so it never outlives the session.
const scrubKey = (value) =>
  typeof value === 'string' ? value.replace(/(x-api-key\\?"\s*:\s*\\?")[^"\\]*/gi, '$1') : value;
const keylessStorage = {
  getItem: (name) => localStorage.getItem(name),
  setItem: (name, value) => localStorage.setItem(name, scrubKey(value)),
  removeItem: (name) => localStorage.removeItem(name),
  clear: () => localStorage.clear(),
  key: (index) => localStorage.key(index),
  get length() {
    return localStorage.length;
  },
};

/** Remembers the key the headers carry; a new key reconnects the socket with it. */
function rememberKey(headers) {
  const key = (headers && typeof headers['x-api-key'] === 'string' ? headers['x-api-key'] : '').trim();
  sessionStorage.setItem(KEY_STORAGE, key);
  if (key !== socketKey) {
    socketKey = key;
    wsClient.terminate();
  }
}

// GraphiQL may call the fetcher with the previous tab's documentAST / operationName (right after
// a tab switch, before its debounced parse), and the toolkit routes an operation to the WebSocket
// only when documentAST + operationName name a subscription. Parse the query we are actually
// sending so `subscription Live {...}` always goes to /ws.
function fetcher(params, opts) {
  rememberKey(opts && opts.headers);
  if (params.operationName === 'IntrospectionQuery') return baseFetcher(params, opts);
  let doc = null;
  try {
    doc = parse(params.query);
  } catch {
    doc = null; // let the server report the syntax error
  }
  if (doc) {
    const names = doc.definitions.filter((d) => d.kind === 'OperationDefinition').map((d) => (d.name ? d.name.value : null));
    let operationName = params.operationName;
    if (!names.includes(operationName ?? null) && names.length === 1) operationName = names[0];
    params = { ...params, operationName: operationName ?? undefined };
    opts = { ...(opts || {}), documentAST: doc };
  }
  return baseFetcher(params, opts);
}

const headers = JSON.stringify({ 'x-api-key': sessionStorage.getItem(KEY_STORAGE) || '' }, null, 2);

const tabs = [
  `query PricePrediction {
  predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) {
    id
    price
    requestId
    createdAt
    latencyUs
    model {
      name
      version
    }
    interval {
      low
      high
      level
    }
    estimatedError
    contributions {
      scale
      baseValue
      features {
        feature
        value
        contribution
      }
    }
  }
}
`,
  `query Batch {
  predictPrices(
    inputs: [{squareFeet: 1200, bedrooms: 2, bathrooms: 1}, {squareFeet: 1500, bedrooms: 99, bathrooms: 2}]
  ) {
    index
    prediction {
      id
      price
    }
    error {
      code
      field
      message
    }
  }
}
`,
  `query History {
  predictions(first: 20) {
    edges {
      cursor
      node {
        id
        createdAt
        status
        requestId
        features {
          squareFeet
          bedrooms
          bathrooms
        }
        price
        model {
          version
        }
        error {
          code
          field
          message
        }
      }
    }
    pageInfo {
      hasNextPage
      endCursor
    }
  }
}
`,
  `query Drift {
  drift(model: "gradient-boosting") {
    modelVersion
    status
    predictions
    features {
      feature
      status
      psi
      wassersteinNormalized
      sampleSize
    }
    thresholds {
      psiWarn
      psiDrift
    }
  }
}
`,
  `subscription Live {
  predictionLogged {
    id
    createdAt
    status
    price
    model {
      name
      version
    }
  }
}
`,
].map((query) => ({ query, headers }));

function App() {
  return (
    <GraphiQL
      fetcher={fetcher}
      storage={keylessStorage}
      defaultTabs={tabs}
      defaultHeaders={headers}
      isHeadersEditorEnabled={true}
      shouldPersistHeaders={false}
      defaultEditorToolsVisibility="headers"
    >
      <GraphiQL.Logo>
        <span className="hpa-logo">
          house-price-api <a href="/dashboard">dashboard</a> <a href="/">home</a>
        </span>
      </GraphiQL.Logo>
    </GraphiQL>
  );
}

createRoot(document.getElementById('graphiql')).render(<App />);
