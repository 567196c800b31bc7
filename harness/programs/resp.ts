// A minimal Redis client (RESP2 over net.Socket): enough to authenticate, select a database and read
// replies the way Dify's redis-py and the plugin daemon's go-redis do, with no client library.
import { connect, type Socket } from 'node:net';

export type Reply = string | number | null;

const encode = (args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/** One parsed reply from the front of `buffer`, or undefined when incomplete. Errors come back as '-...'. */
function parse(buffer: string): { reply: Reply; rest: string } | undefined {
  const end = buffer.indexOf('\r\n');
  if (end < 0) return undefined;
  const head = buffer.slice(1, end);
  const after = buffer.slice(end + 2);
  switch (buffer[0]) {
    case '+':
      return { reply: head, rest: after };
    case '-':
      return { reply: `-${head}`, rest: after };
    case ':':
      return { reply: Number(head), rest: after };
    case '$': {
      const length = Number(head);
      if (length < 0) return { reply: null, rest: after };
      if (after.length < length + 2) return undefined;
      return { reply: after.slice(0, length), rest: after.slice(length + 2) };
    }
    default:
      throw new Error(`unexpected Redis reply: ${JSON.stringify(buffer.slice(0, 20))}`);
  }
}

export class RedisConnection {
  private buffer = '';
  private waiting: ((reply: Reply) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let parsed = parse(this.buffer); parsed; parsed = parse(this.buffer)) {
        this.buffer = parsed.rest;
        this.waiting.shift()?.(parsed.reply);
      }
    });
  }

  static open(host: string, port: number): Promise<RedisConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port }, () => resolve(new RedisConnection(socket)));
      socket.once('error', reject);
    });
  }

  command(...args: string[]): Promise<Reply> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.socket.write(encode(args));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
