/**
 * How recipients are shown to people (`nixseal list`, `who`): an ssh key by its comment (or its
 * SHA256 fingerprint), an age key shortened. Also the normal form used to compare recipients.
 */
import {
  decodeSshPublicKeyLine,
  looksLikeSshPublicKey,
  sshFingerprint,
  sshPublicKeyWire,
} from "../ssh/index.js";

export interface RecipientInfo {
  /** The recipient as written in the rules. */
  recipient: string;
  kind: "x25519" | "post-quantum" | "ssh-ed25519" | "ssh-rsa" | "plugin" | "unknown";
  /** What to show: the ssh comment, or a short form of the key. */
  label: string;
  /** ssh keys: SHA256:... as ssh-keygen -l prints it. */
  fingerprint?: string;
}

function shorten(s: string): string {
  return s.length > 24 ? `${s.slice(0, 12)}…${s.slice(-8)}` : s;
}

/** The comparable form of a recipient: ssh keys without their comment, everything trimmed. */
export function normalizeRecipient(s: string): string {
  const t = s.trim();
  if (looksLikeSshPublicKey(t)) {
    const [type, b64] = t.split(/\s+/);
    return `${type} ${b64}`;
  }
  return t;
}

export function describeRecipient(s: string): RecipientInfo {
  const t = s.trim();
  if (looksLikeSshPublicKey(t)) {
    try {
      const { key, comment } = decodeSshPublicKeyLine(t);
      const fingerprint = sshFingerprint(sshPublicKeyWire(key));
      return { recipient: t, kind: key.type, label: comment || fingerprint, fingerprint };
    } catch {
      return { recipient: t, kind: "unknown", label: shorten(t) };
    }
  }
  if (t.startsWith("age1pq1")) return { recipient: t, kind: "post-quantum", label: shorten(t) };
  if (/^age1[02-9ac-hj-np-z]{58}$/.test(t)) return { recipient: t, kind: "x25519", label: shorten(t) };
  if (/^age1[a-z0-9.+-]+1/.test(t)) return { recipient: t, kind: "plugin", label: shorten(t) };
  return { recipient: t, kind: "unknown", label: shorten(t) };
}
