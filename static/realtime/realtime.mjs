// @livesite/realtime as an ES module. realtime.js is the one source (also the classic <script> build and the
// SharedWorker's script); importing it defines the same `Realtime` a <script> tag would, and this re-exports it.
import "./realtime.js";

const Realtime = globalThis.Realtime;
// The shared worker runs realtime.js; a <script> tag says where it is, a module says it here.
if (!Realtime.workerUrl && typeof document !== "undefined") {
  Realtime.workerUrl = new URL("./realtime.js", import.meta.url).href;
}

export const { connect, Client, RealtimeError, backoff, VERSION } = Realtime;
export { Realtime };
export default Realtime;
