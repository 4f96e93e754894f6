/**
 * The hook's side of the prompt: asking a user's `nixseal agent` to approve a build secret.
 *
 * Node cannot read SO_PEERCRED, so the uid is proven the other way round: each agent listens on
 * `<agentDir>/<uid>`, in a root-owned directory with mode 1733 (like /tmp: anyone may create,
 * nobody may list, remove or rename another's entry). The kernel makes a socket file owned by
 * the user who bound it, and only root can chown it, so a socket named after uid U and owned by
 * U was created by U. The hook (root) connects only to the socket of the user who asked for the
 * build, and only if its owner matches.
 *
 * Protocol: one JSON line each way. Hook -> agent:
 *   {"type":"request","secret":NAME,"drv":PATH,"url":URL,"file":AGE_FILE}
 * agent -> hook:
 *   {"approved":true,"secret":null|BASE64}   (null: the host decrypts it)
 *   {"approved":false,"reason":TEXT}
 * No answer within the policy's agentTimeoutSeconds is a refusal: a build never hangs.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";

export interface AgentRequest {
  secret: string;
  drvPath: string;
  url: string;
  file: string;
  uid: number | null;
  agentDir: string;
  timeoutMs: number;
}

export type AgentAnswer =
  | { approved: true; plaintext: Uint8Array | null }
  | { approved: false; reason: string };

export const MAX_AGENT_MESSAGE = 256 * 1024;

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
        `${JSON.stringify({ type: "request", secret: request.secret, drv: request.drvPath, url: request.url, file: request.file })}\n`,
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
      const m = msg as { approved?: unknown; secret?: unknown; reason?: unknown } | null;
      if (m !== null && m.approved === true && (m.secret === null || m.secret === undefined)) {
        return finish({ approved: true, plaintext: null });
      }
      if (
        m !== null &&
        m.approved === true &&
        typeof m.secret === "string" &&
        /^[A-Za-z0-9+/]*={0,2}$/.test(m.secret)
      ) {
        return finish({ approved: true, plaintext: Buffer.from(m.secret, "base64") });
      }
      if (m !== null && m.approved === false) {
        const reason =
          typeof m.reason === "string" ? m.reason.replace(/[\x00-\x1f\x7f]/g, "?").slice(0, 200) : "";
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
}

/**
 * The agent's side: listens on `<agentDir>/<uid>` (created 0600 by this user, which is what
 * proves the uid to the hook) and answers each request with `decide`, one at a time. Returns a
 * function that stops listening and removes the socket.
 */
export async function serveAgent(
  agentDir: string,
  uid: number,
  decideRequest: (p: AgentPrompt) => Promise<AgentAnswer>,
): Promise<{ socket: string; close: () => void }> {
  const socket = path.join(agentDir, String(uid));
  try {
    const st = fs.lstatSync(socket);
    // A stale socket of ours (a killed agent) is replaced; anything else is an error.
    if (st.isSocket() && st.uid === uid) fs.unlinkSync(socket);
  } catch {}
  let queue = Promise.resolve();
  const server = net.createServer((conn) => {
    let buf = "";
    conn.setEncoding("utf8");
    conn.on("error", () => conn.destroy());
    conn.on("data", (d: string) => {
      buf += d;
      if (buf.length > MAX_AGENT_MESSAGE) return conn.destroy();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      let req: { type?: unknown; secret?: unknown; drv?: unknown; url?: unknown } | null = null;
      try {
        req = JSON.parse(buf.slice(0, nl));
      } catch {}
      buf = "";
      if (
        req === null ||
        req.type !== "request" ||
        typeof req.secret !== "string" ||
        typeof req.drv !== "string" ||
        typeof req.url !== "string"
      ) {
        conn.end(`${JSON.stringify({ approved: false, reason: "malformed request" })}\n`);
        return;
      }
      const prompt = { secret: req.secret, drv: req.drv, url: req.url };
      queue = queue.then(async () => {
        if (conn.destroyed) return;
        const answer = await decideRequest(prompt).catch(
          (e: Error): AgentAnswer => ({ approved: false, reason: e.message }),
        );
        const msg = answer.approved
          ? {
              approved: true,
              secret: answer.plaintext === null ? null : Buffer.from(answer.plaintext).toString("base64"),
            }
          : { approved: false, reason: answer.reason };
        if (answer.approved) answer.plaintext?.fill(0);
        conn.end(`${JSON.stringify(msg)}\n`);
      });
    });
  });
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socket, () => resolve());
    });
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
