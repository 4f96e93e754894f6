/**
 * YAML aliases, bounded before they are expanded: the readers of sops YAML files
 * (stores/yaml.ts) and of `.sops.yaml` (creation-rules.ts) turn a parsed document into a tree
 * with every alias replaced by a copy of its anchor's node. A few hundred bytes of chained
 * anchors (`aN: &aN {x: *aN-1, y: *aN-1}`) expand to millions of nodes, so the size and depth of
 * the expanded tree are computed first, in one pass over the parsed nodes (each node's size
 * remembered), and a document over the readers' limits is refused before any copy is made
 * (docs/architecture.md, invariant 7).
 *
 * The `yaml` package resolves an alias (`Alias.resolve`) by walking the whole document, on
 * every call; its `maxAliasCount` option applies only to `toJS()`, which these readers do not
 * use (they read comments and keep key order). Anchors are found here once instead, in
 * document order: an alias names the last anchor of that name before it.
 */
import type { Alias, Node } from "yaml";
import { yamlLib } from "./yaml-lib.js";

/** What an expansion costs, as a reader counts it. */
export interface ExpansionRules {
  /** The node limit of the whole expanded tree. */
  maxNodes: number;
  /** The limit on nodes that are there only as copies made by aliases. */
  maxAliasedNodes: number;
  /** The depth limit: a node deeper than this is refused. */
  maxDepth: number;
  /** An alias counts as a node of its own, one level above its target (.sops.yaml's reader). */
  aliasIsNode: boolean;
  /** Mapping keys count for depth (the sops YAML store resolves keys one level down). */
  keysNest: boolean;
}

export type ExpansionOutcome =
  | { nodes: number; aliased: number }
  | { refused: "nodes" | "aliased" | "depth" };

class Refused {
  constructor(readonly why: "nodes" | "aliased" | "depth") {}
}

/** The aliases of one parsed document and the anchored nodes they name. */
export class YamlAliases {
  private readonly targets = new Map<Alias, Node>();

  private constructor(root: unknown) {
    const anchors = new Map<string, Node>();
    const stack: unknown[] = [root];
    while (stack.length > 0) {
      const n = stack.pop();
      if (yamlLib().isAlias(n)) {
        const target = anchors.get(n.source);
        if (target !== undefined) this.targets.set(n, target);
        continue;
      }
      if (n === null || typeof n !== "object") continue;
      const anchor = (n as { anchor?: unknown }).anchor;
      if (typeof anchor === "string") anchors.set(anchor, n as Node);
      // Children in reverse, so that they come off the stack in document order.
      if (yamlLib().isMap(n)) {
        for (let i = n.items.length - 1; i >= 0; i--) {
          const pair = n.items[i];
          if (yamlLib().isPair(pair)) stack.push(pair.value, pair.key);
        }
      } else if (yamlLib().isSeq(n)) {
        for (let i = n.items.length - 1; i >= 0; i--) stack.push(n.items[i]);
      }
    }
  }

  /** The aliases of a document (`doc.contents`), or null when it has none. */
  static of(root: unknown, source: string): YamlAliases | null {
    // An alias is written `*name`: without a `*` in the text there is none (the common case).
    if (!source.includes("*")) return null;
    const index = new YamlAliases(root);
    return index.targets.size > 0 ? index : null;
  }

  /** The node an alias names, or undefined when no anchor of that name comes before it. */
  target(alias: Alias): Node | undefined {
    return this.targets.get(alias);
  }

  /**
   * The number of nodes of `root` once every alias is expanded, computed without expanding
   * them; refused as soon as it is over `rules.maxNodes`, the copies made by aliases are over
   * `rules.maxAliasedNodes`, or a node would be deeper than `rules.maxDepth` (an alias inside
   * the node it names is infinitely deep).
   */
  expansion(root: unknown, rules: ExpansionRules): ExpansionOutcome {
    type Size = { nodes: number; height: number; aliased: number };
    const memo = new Map<object, Size>();
    const step = rules.aliasIsNode ? 1 : 0;
    const check = (out: Size): void => {
      if (out.nodes > rules.maxNodes) throw new Refused("nodes");
      if (out.aliased > rules.maxAliasedNodes) throw new Refused("aliased");
    };
    const add = (out: Size, v: Size): void => {
      out.nodes += v.nodes;
      out.aliased += v.aliased;
      out.height = Math.max(out.height, 1 + v.height);
      check(out);
    };
    const measure = (n: unknown, depth: number): Size => {
      if (depth > rules.maxDepth) throw new Refused("depth");
      if (n === null || typeof n !== "object") return { nodes: 1, height: 0, aliased: 0 };
      const known = memo.get(n);
      if (known !== undefined) {
        if (depth + known.height > rules.maxDepth) throw new Refused("depth");
        return known;
      }
      const out: Size = { nodes: 1, height: 0, aliased: 0 };
      if (yamlLib().isAlias(n)) {
        const target = this.targets.get(n);
        if (target === undefined) return out; // the reader reports it
        const t = measure(target, depth + step);
        // Every node of the target's expansion is a copy.
        out.nodes = t.nodes + step;
        out.aliased = t.nodes;
        out.height = t.height + step;
        check(out);
      } else if (yamlLib().isMap(n)) {
        for (const pair of n.items) {
          if (!yamlLib().isPair(pair)) continue;
          if (rules.keysNest) out.height = Math.max(out.height, 1 + measure(pair.key, depth + 1).height);
          add(out, measure(pair.value ?? null, depth + 1));
        }
      } else if (yamlLib().isSeq(n)) {
        for (const item of n.items) add(out, measure(item, depth + 1));
      }
      memo.set(n, out);
      return out;
    };
    try {
      const size = measure(root, 0);
      return { nodes: size.nodes, aliased: size.aliased };
    } catch (e) {
      if (e instanceof Refused) return { refused: e.why };
      throw e;
    }
  }
}
