// Kubernetes API errors as log fields (the PVC cache and the Event recorder both log them).
/** An API error as code, reason and the Status message (which names fields, not our Secret's data). */
export function describeApiError(error: unknown): { code?: number | string; reason?: string; message: string } {
  if (!(error instanceof Error)) return { message: String(error).slice(0, 300) };
  const e = error as Error & { code?: number | string; body?: unknown };
  const result: { code?: number | string; reason?: string; message: string } = {
    message: error.message.split('\n')[0]?.slice(0, 300) ?? '',
  };
  if (e.code !== undefined) result.code = e.code;
  if (typeof e.body === 'string') {
    try {
      const status = JSON.parse(e.body) as { reason?: string; message?: string };
      if (status.reason) result.reason = status.reason;
      if (status.message) result.message = status.message.slice(0, 300);
    } catch {
      // not a Status: the first line of the message is enough
    }
  }
  return result;
}
