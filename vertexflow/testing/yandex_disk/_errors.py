"""Error answers of the emulated service.

Bodies are ``{"message", "description", "error"}`` as cloud-api.yandex.net
sends them (``message`` in Russian, ``description`` in English). The texts of
the names marked "recorded" are copied from real responses (yadisk's
``tests/recorded``); the others follow the same pattern.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: raised by handlers, turned into JSON by the middleware."""

    def __init__(self, status: int, error: str, description: str, message: str = "",
                 **extra: Any) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.message = message or description
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "description": self.description, "error": self.error, **self.extra}


def unauthorized() -> ApiError:  # recorded
    return ApiError(401, "UnauthorizedError", "Unauthorized", "Не авторизован.")


def not_found() -> ApiError:  # recorded
    return ApiError(404, "DiskNotFoundError", "Resource not found.", "Не удалось найти запрошенный ресурс.")


def operation_not_found() -> ApiError:  # recorded
    return ApiError(404, "DiskOperationNotFoundError", "Operation not found.", "Не удалось найти  операцию.")


def dir_exists(path: str) -> ApiError:  # recorded
    return ApiError(409, "DiskPathPointsToExistentDirectoryError",
                    f'Specified path "{path}" points to existent directory.',
                    f'По указанному пути "{path}" уже существует папка с таким именем.')


def already_exists(path: str) -> ApiError:
    return ApiError(409, "DiskResourceAlreadyExistsError", f'Resource "{path}" already exists.',
                    f'Ресурс "{path}" уже существует.')


def parent_missing(path: str) -> ApiError:
    return ApiError(409, "DiskPathDoesntExistsError", f'Specified path "{path}" doesn\'t exists.',
                    f'Указанного пути "{path}" не существует.')


def md5_differs() -> ApiError:
    return ApiError(409, "MD5DifferError", "MD5 checksum of the resource differs from the given one.",
                    "MD5 ресурса не совпадает с указанным.")


def move_into_itself(path: str) -> ApiError:
    return ApiError(409, "DiskResourceConflictError", f'Cannot move or copy "{path}" into itself.',
                    f'Нельзя переместить или скопировать "{path}" в себя.')


def field_error(field: str, why: str) -> ApiError:
    return ApiError(400, "FieldValidationError", f'Error validating field "{field}": {why}',
                    f'Ошибка проверки поля "{field}": {why}')


def bad_request(description: str) -> ApiError:
    return ApiError(400, "BadRequestError", description, "Некорректный запрос.")


def quota_exhausted() -> ApiError:
    # The name is the one Yandex's own server tests expect (DiskStorageQuotaExhaustedError).
    return ApiError(507, "DiskStorageQuotaExhaustedError", "Disk storage quota exhausted.",
                    "Недостаточно свободного места.")


def file_too_large(limit: int, paid: bool) -> ApiError:
    # ``reason`` and ``limit`` are what Yandex's server tests check on this 413;
    # the ``error`` name itself has not been seen in recorded traffic.
    reason = "PaidUserUploadFileSizeLimitExceeded" if paid else "FreeUserUploadFileSizeLimitExceeded"
    return ApiError(413, "DiskFileSizeLimitExceededError", "File size limit exceeded.",
                    "Превышен максимальный размер файла.", reason=reason, limit=limit)


def too_many_requests() -> ApiError:
    return ApiError(429, "TooManyRequestsError", "Too Many Requests", "Слишком много запросов.")


def locked() -> ApiError:
    return ApiError(423, "DiskResourceLockedError", "Resource is locked. Try again later.",
                    "Ресурс заблокирован. Повторите попытку позже.")


#: What injected server failures answer with.
SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("InternalServerError", "Internal Server Error"),
    502: ("BadGatewayError", "Bad Gateway"),
    503: ("ServiceUnavailableError", "Service Unavailable"),
    504: ("GatewayTimeoutError", "Gateway Timeout"),
}


def server_error(status: int) -> ApiError:
    name, text = SERVER_ERRORS[status]
    return ApiError(status, name, text, "Сервис временно недоступен.")


def html_error(status: int, title: str) -> str:
    """The downloader and uploader answer errors with a small HTML page, not JSON."""
    return (f"<html><head><title>{status} {title}</title></head>"
            f"<body><h1>{status} {title}</h1></body></html>")
