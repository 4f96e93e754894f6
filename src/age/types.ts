/**
 * The two small interfaces every key type implements, as in typage and age's Go API.
 * age spec: "Recipient stanzas".
 */

/** One recipient stanza of an age header: `-> type arg...` followed by a base64 body. */
export interface Stanza {
  type: string;
  args: string[];
  body: Uint8Array;
}

/** Something a file key can be wrapped for. */
export interface Recipient {
  /** Wraps the 16-byte file key into one or more stanzas. Must not keep a reference to fileKey. */
  wrapFileKey(fileKey: Uint8Array): Stanza[] | Promise<Stanza[]>;
  /**
   * age "labels": recipients can only be mixed with recipients of the same label set
   * (e.g. "postquantum" hybrid recipients are not mixed with classic ones; scrypt is alone).
   */
  readonly labels?: readonly string[];
}

/** Something that can unwrap a file key. */
export interface Identity {
  /**
   * Returns the file key if one of the stanzas is for this identity, null if none is.
   * Throws a NixsealError if a stanza of this identity's type is malformed (age spec: such a
   * stanza makes the header invalid, it is not skipped).
   */
  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | null | Promise<Uint8Array | null>;
  /** For error messages: what this identity is and where it came from, never key material. */
  readonly description: string;
}

/** age spec: the file key is 16 bytes. */
export const FILE_KEY_SIZE = 16;
