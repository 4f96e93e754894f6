/**
 * The hook's side of the agent: asking a user's `nixseal agent` to approve a build secret, or to
 * supply its value.
 *
 * Node cannot read SO_PEERCRED, so the uid is proven the other way round: each agent listens on
 * `<agentDir>/<uid>`, in a root-owned directory with mode 1733 (like /tmp: anyone may create,
 * nobody may list, remove or rename another's entry). The kernel makes a socket file owned by
 * the user who bound it, and only root can chown it, so a socket named after uid U and owned by
 * U was created by U. The hook (root) connects only to the socket of the user who asked for the
 * build, and only if its owner matches.
 *
 * Protocol: one JSON line each way. Hook -> agent:
 *   {"type":"request","secret":NAME,"drv":PATH,"url":URL,"want":"approval"|"value","prompt":BOOL,
 *    "timeoutMs":MS}
 * ("approval": the host has the value, the user confirms; "value": the agent supplies it, and
 * `prompt` says whether the user must confirm even a value from a file or command)
 * agent -> hook:
 *   {"approved":true,"secret":null}      (an approval)
 *   {"approved":true,"secret":BASE64}    (a value: only for "value", 1..MAX_AGENT_VALUE bytes)
 *   {"approved":false,"reason":TEXT}                (the user declined)
 *   {"approved":false,"failed":true,"reason":TEXT}  (the agent could not get the value)
 * Any other answer, or one of the wrong kind, is a refusal. No answer within the policy's
 * agentTimeoutSeconds is a refusal too: a build never hangs.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { NixsealError } from "../common/index.js";

/** What the hook asks an agent for. */
export type AgentWant = "approval" | "value";

export interface AgentRequest {
  secret: string;
  drvPath: string;
  url: string;
  want: AgentWant;
  /** For "value": the user confirms even a value the agent has from a file or command. */
  prompt: boolean;
  uid: number | null;
  agentDir: string;
  timeoutMs: number;
}

export type AgentAnswer =
  | { approved: true; plaintext: Uint8Array | null }
  | { approved: false; reason: string; failed?: boolean };

export const MAX_AGENT_MESSAGE = 256 * 1024;
/** The largest value an agent may supply (tokens and keys; base64 of it fits the message). */
export const MAX_AGENT_VALUE = 64 * 1024;

/** The socket of `uid`'s agent, if one is there and provably that user's; else why not. */
export function agentSocketOf(agentDir: string, uid: number): { socket: string } | { reason: string } {
  let dirStat: fs.Stats;
  try {
    dirStat = fs.lstatSync(agentDir);
  } catch {
    return {
      reason: `no agent is running (${agentDir} does not exist; start 'nixseal agent' or use 'nixseal build')`,
    };
  }
  if (
    !dirStat.isDirectory() ||
    dirStat.uid !== 0 ||
    (dirStat.mode & 0o1000) === 0 ||
    (dirStat.mode & 0o004) !== 0
  ) {
    return { reason: `${agentDir} must be a root-owned directory with mode 1733` };
  }
  const socket = path.join(agentDir, String(uid));
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socket);
  } catch {
    return { reason: `no agent of uid ${uid} is running (start 'nixseal agent' or use 'nixseal build')` };
  }
  if (!st.isSocket() || st.uid !== uid) return { reason: `${socket} is not a socket owned by uid ${uid}` };
  return { socket };
}

/** Asks the agent; resolves with its answer or a refusal (absent, silent, malformed). */
export function askAgent(request: AgentRequest): Promise<AgentAnswer> {
  if (request.uid === null) {
    return Promise.resolve({ approved: false, reason: "the user who asked for the build is unknown" });
  }
  const where = agentSocketOf(request.agentDir, request.uid);
  if ("reason" in where) return Promise.resolve({ approved: false, reason: where.reason });
  return new Promise((resolve) => {
    let done = false;
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (answer: AgentAnswer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.destroy();
      for (const c of chunks) c.fill(0);
      resolve(answer);
    };
    const timer = setTimeout(
      () =>
        finish({ approved: false, reason: `the agent did not answer within ${request.timeoutMs / 1000} s` }),
      request.timeoutMs,
    );
    const conn = net.createConnection(where.socket);
    conn.on("error", (e) =>
      finish({ approved: false, reason: `cannot reach the agent: ${(e as NodeJS.ErrnoException).code}` }),
    );
    conn.on("connect", () => {
      conn.write(
        `${JSON.stringify({ type: "request", secret: request.secret, drv: request.drvPath, url: request.url, want: request.want, prompt: request.prompt, timeoutMs: request.timeoutMs })}\n`,
      );
    });
    conn.on("data", (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      if (size > MAX_AGENT_MESSAGE)
        return finish({ approved: false, reason: "the agent's answer is too long" });
      const all = Buffer.concat(chunks);
      const nl = all.indexOf(0x0a);
      if (nl < 0) {
        all.fill(0);
        return;
      }
      let msg: unknown;
      try {
        msg = JSON.parse(all.subarray(0, nl).toString("utf8"));
      } catch {
        msg = null;
      }
      all.fill(0);
      const m = msg as { approved?: unknown; secret?: unknown; reason?: unknown; failed?: unknown } | null;
      if (m !== null && m.approved === true && (m.secret === null || m.secret === undefined)) {
        if (request.want === "approval") return finish({ approved: true, plaintext: null });
        return finish({
          approved: false,
          reason: "the agent approved but supplied no value (is it an older nixseal?)",
        });
      }
      if (
        m !== null &&
        m.approved === true &&
        typeof m.secret === "string" &&
        /^[A-Za-z0-9+/]*={0,2}$/.test(m.secret)
      ) {
        if (request.want === "approval") {
          return finish({ approved: false, reason: "the agent sent a value for a secret the host holds" });
        }
        const value = Buffer.from(m.secret, "base64");
        if (value.length === 0 || value.length > MAX_AGENT_VALUE) {
          value.fill(0);
          return finish({
            approved: false,
            reason: `the agent's value is empty or longer than ${MAX_AGENT_VALUE} bytes`,
          });
        }
        return finish({ approved: true, plaintext: value });
      }
      if (m !== null && m.approved === false) {
        const reason =
          typeof m.reason === "string" ? m.reason.replace(/[\x00-\x1f\x7f]/g, "?").slice(0, 200) : "";
        if (m.failed === true) {
          return finish({ approved: false, reason: `the agent could not supply it (${reason})` });
        }
        return finish({ approved: false, reason: `the user declined${reason ? ` (${reason})` : ""}` });
      }
      finish({ approved: false, reason: "the agent's answer is malformed" });
    });
    conn.on("end", () =>
      finish({ approved: false, reason: "the agent closed the connection without answering" }),
    );
  });
}

/** What the agent shows its user for one request (all fields are public: names, paths, URLs). */
export interface AgentPrompt {
  secret: string;
  drv: string;
  url: string;
  want: AgentWant;
  prompt: boolean;
  /** How long the hook waits for the answer (the agent stops asking then). */
  timeoutMs: number;
}

/** Whether something accepts connections on `socket` (a running agent), within `timeoutMs`. */
export function socketAnswers(socket: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.createConnection(socket);
    const done = (alive: boolean) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    conn.on("connect", () => done(true));
    conn.on("error", () => done(false));
  });
}

/** The fields of a request ("file": sent by hooks of older nixseal versions, ignored). */
const REQUEST_FIELDS = new Set(["type", "secret", "drv", "url", "want", "prompt", "timeoutMs", "file"]);

/** Parses one request line; null if it is not a well-formed request (unknown fields included). */
function parseRequest(line: string): AgentPrompt | null {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof req !== "object" || req === null || Array.isArray(req)) return null;
  const r = req as Record<string, unknown>;
  if (Object.keys(r).some((k) => !REQUEST_FIELDS.has(k))) return null;
  if (
    r.type !== "request" ||
    typeof r.secret !== "string" ||
    typeof r.drv !== "string" ||
    typeof r.url !== "string" ||
    r.secret.length > 128 ||
    r.drv.length > 4096 ||
    r.url.length > 4096
  ) {
    return null;
  }
  // A hook of an older nixseal sends neither: it asks for an approval.
  const want = r.want === undefined ? "approval" : r.want;
  if (want !== "approval" && want !== "value") return null;
  const prompt = r.prompt === undefined ? true : r.prompt;
  if (typeof prompt !== "boolean") return null;
  const timeoutMs = r.timeoutMs === undefined ? 120_000 : r.timeoutMs;
  if (typeof timeoutMs !== "number" || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 3_600_000)
    return null;
  return { secret: r.secret, drv: r.drv, url: r.url, want, prompt, timeoutMs };
}

/**
 * The agent's side: listens on `<agentDir>/<uid>` (created 0600 by this user, which is what
 * proves the uid to the hook) and answers each request with `decideRequest`, one at a time;
 * its signal fires when the hook has hung up (it gave up waiting). Refuses to start when
 * another agent of this user answers on the socket. Returns a function that stops listening
 * and removes the socket.
 */
export async function serveAgent(
  agentDir: string,
  uid: number,
  decideRequest: (p: AgentPrompt, signal: AbortSignal) => Promise<AgentAnswer>,
): Promise<{ socket: string; close: () => void }> {
  const socket = path.join(agentDir, String(uid));
  let stale = false;
  try {
    const st = fs.lstatSync(socket);
    stale = st.isSocket() && st.uid === uid;
  } catch {}
  if (stale) {
    if (await socketAnswers(socket)) {
      throw new NixsealError("AGENT_RUNNING", `an agent of uid ${uid} already answers on ${socket}`, {
        file: socket,
        hint: "use that agent (nixseal build uses it), or stop it first",
      });
    }
    // A stale socket of ours (a killed agent) is replaced; anything else is an error at listen.
    fs.unlinkSync(socket);
  }
  let queue = Promise.resolve();
  const server = net.createServer((conn) => {
    let buf = "";
    const hungUp = new AbortController();
    conn.setEncoding("utf8");
    conn.on("error", () => conn.destroy());
    conn.on("close", () => hungUp.abort());
    conn.on("data", (d: string) => {
      buf += d;
      if (buf.length > MAX_AGENT_MESSAGE) return conn.destroy();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      const prompt = parseRequest(buf.slice(0, nl));
      buf = "";
      conn.pause();
      if (prompt === null) {
        conn.end(`${JSON.stringify({ approved: false, reason: "malformed request" })}\n`);
        return;
      }
      queue = queue.then(async () => {
        if (conn.destroyed) return;
        const answer = await decideRequest(prompt, hungUp.signal).catch(
          (e: Error): AgentAnswer => ({ approved: false, failed: true, reason: e.message }),
        );
        let msg: object;
        if (answer.approved) {
          msg = {
            approved: true,
            secret: answer.plaintext === null ? null : Buffer.from(answer.plaintext).toString("base64"),
          };
          answer.plaintext?.fill(0);
        } else {
          msg = { approved: false, reason: answer.reason, ...(answer.failed ? { failed: true } : {}) };
        }
        if (!conn.destroyed) conn.end(`${JSON.stringify(msg)}\n`);
      });
    });
  });
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socket, () => resolve());
    });
  } catch (e) {
    throw new NixsealError(
      "IO",
      `cannot listen on ${socket}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { file: socket, hint: "another user's file of that name, or a missing agent directory" },
    );
  } finally {
    process.umask(oldMask);
  }
  return {
    socket,
    close: () => {
      server.close();
      try {
        fs.unlinkSync(socket);
      } catch {}
    },
  };
}
