// TimescaleDB over the Postgres wire protocol, for tests on machines with no
// Docker and no TimescaleDB package: PGlite (PostgreSQL 17 compiled to WASM,
// here the fork that bundles TimescaleDB) served by pglite-socket.
//
//   node tools/pglite/server.mjs --port PORT [--host 127.0.0.1] [--data-dir DIR]
//
// Prints `READY <host>:<port>` on stdout once it accepts connections; the
// test fixture waits for that line.
//
// PGlite is ONE backend session: clients are served one at a time (a second
// connection waits in pglite-socket's queue until the first closes). The
// patches below fix what pglite-socket 0.0.19 gets wrong for a test server.
import { parseArgs } from 'node:util'
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

const Handler = PGLiteSocketHandler.prototype
const Server = PGLiteSocketServer.prototype

// Untyped first packets asking for encryption; we answer 'N' (not supported)
// and the client goes on in plain text with its startup packet.
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104

function message(type, body = Buffer.alloc(0)) {
  const head = Buffer.alloc(5)
  head.write(type, 0, 'latin1')
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}
const query = (sql) => message('Q', Buffer.from(`${sql}\0`))
// Sync ends a half-done extended-protocol exchange; then drop what a new
// backend would not have: an open transaction, prepared statements (psycopg
// names them _pg3_0... afresh on every connection), temp tables, SETs,
// LISTENs. DISCARD ALL resets search_path to pg_catalog, the value PGlite
// boots with, so set it back to what PGlite's own start-up sets.
const RESET_SESSION = new Uint8Array(
  Buffer.concat([
    message('S'),
    query('ROLLBACK'),
    query('DISCARD ALL'),
    query('SET search_path TO public'),
  ]),
)

// 1. pglite-socket hands each TCP chunk to PGlite as it comes, but PGlite needs
// whole messages: one split over two chunks (any query over 64 KiB, the size
// of Node's socket reads) aborts the WASM instance and with it this process.
// And PGlite answers an SSLRequest with an auth request, which libpq's
// default sslmode=prefer rejects ("invalid response to SSL negotiation").
const handleChunk = Handler.handleData
Handler.handleData = function handleWholeMessages(chunk) {
  const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk
  let start = 0
  let end = 0
  for (;;) {
    // Until the startup packet, messages have no type byte: int32 length first.
    const typed = this.startedUp === true
    if (buf.length - end < (typed ? 5 : 8)) break
    const length = buf.readInt32BE(end + (typed ? 1 : 0))
    if (length < 4) {
      this.socket?.destroy() // not the protocol; the loop would never advance
      return Promise.resolve(0)
    }
    const size = (typed ? 1 : 0) + length
    if (buf.length - end < size) break
    end += size
    if (!typed) {
      const code = buf.readInt32BE(end - size + 4)
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        this.socket?.write('N') // the client waits for this; nothing follows yet
        start = end
      } else {
        this.startedUp = true
      }
    }
  }
  this.pending = end < buf.length ? buf.subarray(end) : null
  if (end === start) return Promise.resolve(0)
  return handleChunk.call(this, buf.subarray(start, end))
}

// 2. The next client gets the same backend session, state and all, so reset
// it while this handler still holds PGlite's lock (the call is synchronous).
const detach = Handler.detach
Handler.detach = function resetThenDetach(close) {
  if (this.socket && this.startedUp) {
    try {
      this.db.execProtocolRawSync(RESET_SESSION)
    } catch (err) {
      console.error('session reset failed:', err)
    }
  }
  return detach.call(this, close)
}

// 3. On any error the handler rejects PGlite's lock promise, which nobody
// awaits, so Node exits on the unhandled rejection: a client resetting its
// connection would kill the server. Release the lock normally instead. But a
// WASM abort (e.g. COPY FROM STDIN) leaves PGlite unusable: exit then, so
// clients see a refused connection rather than a server that answers nothing.
const handleError = Handler.handleError
Handler.handleError = function releaseOnError(err) {
  if (err instanceof WebAssembly.RuntimeError) {
    console.error('PGlite aborted; its WASM instance is unusable, exiting:', err)
    process.exit(70)
  }
  console.error(`connection #${this.handlerId}: ${err?.message ?? err}`)
  this.rejectLock = this.resolveLock
  return handleError.call(this, err)
}

// 4. A queued socket has no 'error' listener yet, and an unheard 'error'
// event is fatal: listen from the start (the handler adds its own later).
const handleConnection = Server.handleConnection
Server.handleConnection = function listenForErrors(socket) {
  socket.on('error', () => {})
  return handleConnection.call(this, socket)
}

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    'data-dir': { type: 'string' },
  },
})
const port = Number.parseInt(args.port ?? '', 10)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node server.mjs --port PORT [--host 127.0.0.1] [--data-dir DIR]')
  process.exit(2)
}

// Handlers go in first: a signal that comes before them (say, right after
// READY) would get Node's default action and kill the process uncleanly.
let db
let server
let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  try {
    await server?.stop()
    // Closing flushes a --data-dir database; in memory it just frees the heap.
    await db?.close()
  } catch (err) {
    console.error(`error while stopping on ${signal}:`, err)
    process.exit(1)
  }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))

// The extension only puts timescaledb's files into the WASM file system;
// clients still run CREATE EXTENSION, as against a real server.
db = await PGlite.create(args['data-dir'] ?? 'memory://', {
  extensions: { timescaledb },
})
// PGLITE_DEBUG=1 logs every connection event and message size to stdout.
const debug = process.env.PGLITE_DEBUG === '1'
server = new PGLiteSocketServer({ db, port, host: args.host, debug })
await server.start()
console.log(`READY ${server.getServerConn()}`)
